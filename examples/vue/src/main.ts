import { createApp } from 'vue';
import IdentityCheck from './IdentityCheck.vue';

createApp(IdentityCheck).mount('#app');
